"""Model backends behind one async chat interface."""
