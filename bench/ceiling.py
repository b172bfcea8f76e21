"""The ceiling: a bare one-route Flask app served with the shop's exact gunicorn settings.

`bench/run.py` compares the shop's pages against these two answers, so the ratio shows
what the shop's own work (database, templates, session) costs on top of Flask + gunicorn.
"""
from flask import Flask, jsonify

app = Flask(__name__)

PAGE = "<!doctype html><html><head><title>ceiling</title></head><body><p>Hello from the ceiling.</p></body></html>"


@app.get("/")
def index():
    return PAGE


@app.get("/status")
def status():
    return jsonify(status="paid", paid=True, amount_total=1800, currency="usd")
