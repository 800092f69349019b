"""Campaigns: segments, the 3-2-1 reminder plan, fan-out and funnel stats (grows in issue 4)."""
