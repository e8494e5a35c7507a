package network

import (
	"errors"
	"fmt"
)

// Kind classifies an error for API clients (it maps to an HTTP status).
type Kind int

// Error kinds.
const (
	KindInternal Kind = iota
	KindInvalid       // bad input
	KindNotFound      // unknown network or endpoint
	KindConflict      // clashes with existing state
)

// Error is an error with a kind.
type Error struct {
	Kind Kind
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func invalidf(format string, a ...any) error {
	return &Error{Kind: KindInvalid, Err: fmt.Errorf(format, a...)}
}

func notFoundf(format string, a ...any) error {
	return &Error{Kind: KindNotFound, Err: fmt.Errorf(format, a...)}
}

func conflictf(format string, a ...any) error {
	return &Error{Kind: KindConflict, Err: fmt.Errorf(format, a...)}
}

// invalid marks err as bad input unless it already has a kind.
func invalid(err error) error {
	var e *Error
	if err == nil || errors.As(err, &e) {
		return err
	}
	return &Error{Kind: KindInvalid, Err: err}
}

// KindOf returns the kind of err (KindInternal when it has none).
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}
