"""Loopback emulators of the AWS Batch, Tapis Jobs v3 and Sutro job APIs (DESIGN.md §7)."""
