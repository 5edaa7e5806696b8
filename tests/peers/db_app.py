"""A Flask service with no tracing code that queries PostgreSQL (psycopg2),
Redis (redis-py) and MySQL (MySQL Connector/Python, its pure-Python
protocol, which reads each packet's header apart from its body) on every
request, over connections opened for that request.
Usage: db_app.py PORT PG_PORT REDIS_PORT MYSQL_PORT PASSWORD"""
import sys

import mysql.connector
import psycopg2
import redis
from flask import Flask

PORT, PG_PORT, REDIS_PORT, MYSQL_PORT = (int(a) for a in sys.argv[1:5])
PASSWORD = sys.argv[5]
app = Flask(__name__)


@app.route("/order/<int:n>")
def order(n):
    pg = psycopg2.connect(host="127.0.0.1", port=PG_PORT, user="app", password=PASSWORD,
                          dbname="shop", sslmode="disable")
    try:
        with pg.cursor() as cur:
            cur.execute("SELECT name FROM items WHERE id = %s", (n,))
            cur.fetchall()
    finally:
        pg.close()
    r = redis.Redis(host="127.0.0.1", port=REDIS_PORT)
    r.set(f"order:{n}", "pending")
    r.get(f"order:{n}")
    r.close()
    my = mysql.connector.connect(host="127.0.0.1", port=MYSQL_PORT, user="app", password=PASSWORD,
                                 database="shop", use_pure=True, ssl_disabled=True)
    try:
        cur = my.cursor()
        cur.execute("SELECT name FROM stock WHERE id = %s", (n,))
        cur.fetchall()
        cur.close()
    finally:
        my.close()
    return f"order {n}\n"


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=PORT, threaded=True)
