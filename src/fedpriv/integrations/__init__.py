"""Adapters that run fedpriv's protocols inside other federated-learning stacks.

:mod:`fedpriv.integrations.codec` turns protocol messages, views and session
state into bytes without pickle; :mod:`fedpriv.integrations.flower` moves them
through Flower's Message API (``pip install 'fedpriv[flower]'``).
"""
