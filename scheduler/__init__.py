"""Visit policy (pure), surge events, planner and the durable dispatch queue."""
