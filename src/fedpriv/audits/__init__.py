"""Audits: configuration, the runner (config → train → measure → report) and reports."""
