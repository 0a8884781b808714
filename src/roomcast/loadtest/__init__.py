"""`roomcast load-test`: synthetic publishers and subscribers on `roomcast.client`.

participant.py  one simulated participant (a `roomcast.client` peer + signalling client)
runner.py       the test: rooms, join pacing, duration; report.py its tables; cli.py its flags
"""
