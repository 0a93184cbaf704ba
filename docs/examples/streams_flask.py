import time

from flask import Flask, Response, stream_with_context

from redis_wsgi_cache import CacheMiddleware

app = Flask(__name__)


@app.get("/events")
def events():
    def ticks():
        for number in range(3):
            yield f"data: tick {number}\n\n"
            time.sleep(0.01)

    # text/event-stream marks it as a stream: never stored, never waited for.
    return Response(stream_with_context(ticks()), mimetype="text/event-stream")


@app.get("/export.csv")
def export():
    def rows():
        yield "id,name\n"
        for number in range(3):
            yield f"{number},user {number}\n"

    # Any other body sent in parts reaches the client part by part, and is stored
    # once complete; the requests waiting on it wait stream_wait seconds at most.
    return Response(rows(), mimetype="text/csv")


app.wsgi_app = CacheMiddleware(app.wsgi_app, default_ttl=60, stream_wait=1.0)
