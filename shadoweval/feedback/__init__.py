"""Human feedback and reviewer labels beside judge verdicts; judge–human agreement."""
