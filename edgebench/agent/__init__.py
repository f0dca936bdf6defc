"""The agent: measures on the device it runs on and reports to a coordinator."""
