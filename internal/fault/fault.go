// Package fault marks the points where the crash tests kill the daemon.
// In normal builds Point does nothing; built with the faultinject tag
// (tests only), the daemon kills itself with SIGKILL at the point named by
// $BPFNET_FAULT ("NAME" or "NAME:N" for the Nth time it is reached).
package fault
