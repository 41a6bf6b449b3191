"""Policies behind one interface (the fast baseline actor-critic; GR00T N1.5 lives in gr00t_port)."""
