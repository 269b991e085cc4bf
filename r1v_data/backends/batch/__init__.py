"""Provider batch APIs (`openai-batch:URL#MODEL`, `anthropic-batch:MODEL`): half the price of the
online APIs, results within a day. `core.py` is the provider-neutral state machine, `ledger.py`
where batch ids are recorded, `openai_batch.py` and `anthropic_batch.py` the providers' wire
formats, `http.py` the small client they share."""
