package mounter

import (
	"context"
	"sort"
)

// Updater is a Mount whose files can be changed while its container runs
// (a live update): Update makes c's files those of next, target by target,
// each atomically (a reader of a target sees the old file or the new one,
// never a missing, empty or partial one), in the order of their targets.
// It returns the files c holds afterwards, also when it fails part way:
// a target whose change failed keeps its previous file, and the caller
// retries with the same next. Files a reader still holds open keep their
// bytes; the mounter overwrites them once nothing holds them. c.Pid is
// required: the mount namespace is entered through it.
type Updater interface {
	Update(ctx context.Context, c Container, next *Plan, src SecretSource) ([]File, error)
}

// FileDiff is what changes between two sets of files, by target, each
// list sorted by target: Added and Changed hold the new files, Removed the
// old ones. A file changes when its secret (ID, so also its bytes), owner
// or mode differs; its signal alone changes nothing on disk.
type FileDiff struct {
	Added, Changed, Removed []File
}

// Empty reports whether the diff changes nothing.
func (d FileDiff) Empty() bool {
	return len(d.Added) == 0 && len(d.Changed) == 0 && len(d.Removed) == 0
}

// SameContent reports whether a and b put the same file at their target:
// the same secret, owner and mode.
func SameContent(a, b File) bool {
	return a.SecretID == b.SecretID && a.Size == b.Size && a.UID == b.UID && a.GID == b.GID && a.Mode == b.Mode
}

// DiffFiles compares the files a container holds (cur) with those it
// should hold (next), by target.
func DiffFiles(cur, next []File) FileDiff {
	old := make(map[string]File, len(cur))
	for _, f := range cur {
		old[f.Target] = f
	}
	var d FileDiff
	for _, f := range next {
		o, ok := old[f.Target]
		switch {
		case !ok:
			d.Added = append(d.Added, f)
		case !SameContent(o, f):
			d.Changed = append(d.Changed, f)
		}
		delete(old, f.Target)
	}
	for _, f := range old {
		d.Removed = append(d.Removed, f)
	}
	for _, l := range [][]File{d.Added, d.Changed, d.Removed} {
		sort.Slice(l, func(i, j int) bool { return l[i].Target < l[j].Target })
	}
	return d
}
