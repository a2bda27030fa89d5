"""The command-line tools: `flowviz run`, migrate, seed, accounts, generate, backup,
audit verify. They sit above the services and may import them; nothing imports them back."""
