//go:build !faultinject

package fault

// Point is a crash point (a no-op in normal builds).
func Point(name string) {}
