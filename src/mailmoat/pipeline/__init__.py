"""What a message deserves: rules, the chain that turns them into a verdict, handlers."""
