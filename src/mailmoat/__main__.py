from mailmoat.cli import app

app(prog_name="mailmoat")
