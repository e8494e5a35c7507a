package network

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bpfnet/bpfnet/internal/atomicfile"
	"github.com/bpfnet/bpfnet/internal/fault"
)

// state is what the daemon persists: the desired networks and endpoints.
type state struct {
	Networks  []*Network
	Endpoints []*Endpoint
}

// DefaultStateDir is where bpfnetd keeps its state unless told.
const DefaultStateDir = "/var/lib/bpfnet"

// Store keeps the state in a directory, one file per object
// (networks/ID.json, endpoints/ID.json), so a change writes one small file
// whatever the number of networks, and a crash leaves each object either
// old or new.
type Store struct{ dir string }

// NewStore returns a store in dir. Nothing is created until Manager.Start
// (so --check and --cleanup of a host that never ran bpfnetd change
// nothing).
func NewStore(dir string) *Store { return &Store{dir: dir} }

// create makes the state directories (mode 0700).
func (s *Store) create() error {
	for _, d := range []string{s.dir, filepath.Join(s.dir, "networks"), filepath.Join(s.dir, "endpoints")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create state dir: %w", err)
		}
	}
	return nil
}

// Exists reports whether the state directory exists.
func (s *Store) Exists() bool {
	_, err := os.Stat(s.dir)
	return err == nil
}

func (s *Store) file(kind, id string) string { return filepath.Join(s.dir, kind, id+".json") }

// load reads every object; networks and endpoints come in creation order.
func (s *Store) load() (*state, error) {
	st := &state{}
	if err := readAll(filepath.Join(s.dir, "networks"), &st.Networks); err != nil {
		return nil, err
	}
	if err := readAll(filepath.Join(s.dir, "endpoints"), &st.Endpoints); err != nil {
		return nil, err
	}
	slices.SortFunc(st.Networks, func(a, b *Network) int { return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID)) })
	slices.SortFunc(st.Endpoints, func(a, b *Endpoint) int { return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID)) })
	return st, nil
}

func readAll[T any](dir string, out *[]*T) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // a host where bpfnetd never ran
	}
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read state: %w", err)
		}
		v := new(T)
		if err := json.Unmarshal(b, v); err != nil {
			return fmt.Errorf("parse state %s: %w", path, err)
		}
		*out = append(*out, v)
	}
	return nil
}

func (s *Store) put(kind, id string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	return atomicfile.Write(s.file(kind, id), append(b, '\n'), 0o600, func() { fault.Point("store-synced") })
}

func (s *Store) del(kind, id string) error {
	if err := os.Remove(s.file(kind, id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete state: %w", err)
	}
	return nil
}

func (s *Store) putNetwork(n *Network) error    { return s.put("networks", n.ID, n) }
func (s *Store) deleteNetwork(id string) error  { return s.del("networks", id) }
func (s *Store) putEndpoint(ep *Endpoint) error { return s.put("endpoints", ep.ID, ep) }
func (s *Store) deleteEndpoint(id string) error { return s.del("endpoints", id) }

// sync makes the files hold exactly st (after reconciling at start).
func (s *Store) sync(st *state) error {
	keep := map[string]bool{}
	for _, n := range st.Networks {
		keep[s.file("networks", n.ID)] = true
		if err := s.putNetwork(n); err != nil {
			return err
		}
	}
	for _, ep := range st.Endpoints {
		keep[s.file("endpoints", ep.ID)] = true
		if err := s.putEndpoint(ep); err != nil {
			return err
		}
	}
	for _, kind := range []string{"networks", "endpoints"} {
		entries, _ := os.ReadDir(filepath.Join(s.dir, kind))
		for _, e := range entries {
			if p := filepath.Join(s.dir, kind, e.Name()); !keep[p] {
				if err := os.Remove(p); err != nil {
					return fmt.Errorf("delete state: %w", err)
				}
			}
		}
	}
	return nil
}

// remove deletes the whole state.
func (s *Store) remove() error {
	return errors.Join(os.RemoveAll(filepath.Join(s.dir, "networks")), os.RemoveAll(filepath.Join(s.dir, "endpoints")))
}
