"""The Xledger adapter: the GraphQL client, the secret store, and the local sandbox."""
