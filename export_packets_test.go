package pipes

// FileManifest returns the data file packet pk carries: its content's
// manifest (tests fetch that content by hand).
func FileManifest(pk *Packet) []byte { return pk.p.Data }
