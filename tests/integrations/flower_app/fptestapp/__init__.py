"""fedpriv's Flower test app (protocol only, no model)."""
