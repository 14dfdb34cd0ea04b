"""The MailChannels Inbound API 1.2.0 compatible provisioning API under /inbound/v1."""
