"""FlowPilot Analytics: post-claim activity lag of escalated AI sessions."""
