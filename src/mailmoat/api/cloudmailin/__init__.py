"""The CloudMailin-style management API: /api/v0.1/{account}/…"""
