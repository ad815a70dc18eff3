package pikatest

// ConnectionsServed returns how many connections b has served, over TCP and
// through Dial together.
func ConnectionsServed(b *Broker) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.nextConn
}
