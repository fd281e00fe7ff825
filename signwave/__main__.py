from signwave.cli import main

main()
