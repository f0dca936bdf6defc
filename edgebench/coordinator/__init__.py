"""The coordinator: queues jobs, leases runs to agents, stores results, serves the dashboard."""
