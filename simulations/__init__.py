"""fedclf's absl binaries: federated simulation, SSL, adaptation, grids."""
