package mounter

import (
	"io/fs"
	"reflect"
	"testing"
)

func TestDiffFiles(t *testing.T) {
	f := func(target, id string, mods ...func(*File)) File {
		x := File{SecretID: id, Name: id, Target: target, Mode: 0o444, Size: 3}
		for _, m := range mods {
			m(&x)
		}
		return x
	}
	mode := func(m fs.FileMode) func(*File) { return func(x *File) { x.Mode = m } }
	sig := func(x *File) { x.Signal = "HUP" }
	for _, tc := range []struct {
		name      string
		cur, next []File
		want      FileDiff
	}{
		{"nothing", nil, nil, FileDiff{}},
		{"same", []File{f("/a", "1")}, []File{f("/a", "1")}, FileDiff{}},
		{"signal alone changes nothing", []File{f("/a", "1")}, []File{f("/a", "1", sig)}, FileDiff{}},
		{"rotation", []File{f("/a", "1")}, []File{f("/a", "2")}, FileDiff{Changed: []File{f("/a", "2")}}},
		{"mode", []File{f("/a", "1")}, []File{f("/a", "1", mode(0o400))}, FileDiff{Changed: []File{f("/a", "1", mode(0o400))}}},
		{"uid", []File{f("/a", "1")}, []File{f("/a", "1", func(x *File) { x.UID = 7 })}, FileDiff{Changed: []File{f("/a", "1", func(x *File) { x.UID = 7 })}}},
		{"add and remove, sorted", []File{f("/z", "1"), f("/b", "2")}, []File{f("/y", "3"), f("/c", "4")},
			FileDiff{Added: []File{f("/c", "4"), f("/y", "3")}, Removed: []File{f("/b", "2"), f("/z", "1")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := DiffFiles(tc.cur, tc.next)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("DiffFiles = %+v, want %+v", got, tc.want)
			}
			if got.Empty() != tc.want.Empty() {
				t.Errorf("Empty = %v", got.Empty())
			}
		})
	}
}
