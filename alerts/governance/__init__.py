"""The agent catalog: who owns each agent, what it may use, and the signals that check it."""
