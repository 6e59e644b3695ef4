"""What the SSL3D modules share besides their widgets: Slicer-side set-up of the engine (supported Slicer,
packages, jobs that outlive a module reload), the Sample Data entries, and two small widget helpers (folder
fields bound to the parameter node, the run's loss chart). SSLSegment imports it from SSLPretrain's folder."""
