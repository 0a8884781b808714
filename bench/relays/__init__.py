"""The relays bench/compare.py drives with the same traffic: Roomcast, the C relay baseline
and the aiortc relay baseline. Each `start_*` returns a running `Relay`."""
