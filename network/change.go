package network

// step is one part of a change to the host, the datapath or the state.
type step struct {
	do func() error
	// undo reverses do. It runs when a later step fails, and, for a step
	// marked partial, also when do itself fails (do may have done part of
	// its work: an enforcer that wrote some map entries).
	undo    func()
	partial bool
}

// apply runs steps in order, all or nothing: when one fails, the undos of
// the steps done before it run in reverse order, and its error is
// returned. Creating a network and creating an endpoint are such changes
// (plumbing, policy, state), so a failure anywhere leaves nothing.
func apply(steps ...step) error {
	for i, s := range steps {
		if err := s.do(); err != nil {
			if s.partial && s.undo != nil {
				s.undo()
			}
			for j := i - 1; j >= 0; j-- {
				if steps[j].undo != nil {
					steps[j].undo()
				}
			}
			return err
		}
	}
	return nil
}
