"""signwave: sign every record in a database with a pool of RSA keys, on Celery.

``celery -A signwave`` finds the application in `signwave.celery`.
"""

__version__ = "0.1.0"
