package wire

// TEMPORARY placeholder so the package compiles until internal/specgen
// generates the real MethodID. The generator helper deletes this file.

// MethodID is (class id << 16 | method id).
type MethodID uint32

func (id MethodID) String() string { return "method(" + itoa(int(id>>16)) + "," + itoa(int(id&0xffff)) + ")" }
