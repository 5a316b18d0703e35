"""Symbols shared by UI code."""

refresh_symbol = "\U0001f504"  # 🔄
