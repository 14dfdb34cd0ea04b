"""Email-to-webhook delivery end to end: real SMTP in, real HTTP out, on loopback."""
