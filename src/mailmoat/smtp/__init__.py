"""The SMTP front end: a thin aiosmtpd adapter over the pipeline and services."""
