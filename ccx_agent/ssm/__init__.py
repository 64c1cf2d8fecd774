"""Talking to Cisco Smart Software Manager (direct or On-Prem)."""
