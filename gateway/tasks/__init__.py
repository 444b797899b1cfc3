"""Tasks: time- and tool-bounded grants an agent works under, and the tokens bound to them."""
