"""bmsbus aggregator: battery groups, energy meters, cycles, charge control, alarms and actions."""
