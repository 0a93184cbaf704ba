"""The app the Paste Deploy example serves (``use = call:myapp:make_app``)."""


def make_app(global_config: dict[str, str], **settings: str):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello\n"]

    return app
