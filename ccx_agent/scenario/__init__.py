"""``ccx-agent simulate``: the what-if tool, the real core and store on a simulated clock."""
