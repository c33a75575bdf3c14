package windows

import (
	"errors"
	"io/fs"
	"path/filepath"
	"time"

	winapi "golang.org/x/sys/windows"
)

// Old files a live update replaced or removed (retired-* beside files\)
// are overwritten with zeros, flushed and deleted once no handle holds
// them: wipeFile's exclusive open (no sharing) succeeds only then, and
// while the agent holds it nobody else can open the file. A retired name
// can also be a second name of a file the container still holds (a swap
// that failed and whose extra name a reader's handle kept): reclaim
// removes such a name and never touches the bytes.

// reclaimDelays space the tries to overwrite retired files: the first
// after reclaimGrace, then backing off to the last, repeated until they go
// or the mount is wiped. The grace covers what an exclusive open cannot
// see: a view the reader mapped and still reads after closing its handle
// (a mapping holds no share access).
var reclaimDelays = []time.Duration{reclaimGrace, 10 * time.Second, 30 * time.Second, 60 * time.Second}

const reclaimGrace = 5 * time.Second

// Retired returns how many old files wait to be overwritten.
func (mt *Mount) Retired() int {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	return len(mt.retired)
}

// scheduleReclaim starts the reclaim timer if files wait and none is due.
// mt.mu is held.
func (mt *Mount) scheduleReclaim() {
	if len(mt.retired) == 0 || mt.reclaimTimer != nil || mt.wiped {
		return
	}
	d := reclaimDelays[min(mt.reclaimTries, len(reclaimDelays)-1)]
	mt.reclaimTimer = time.AfterFunc(d, func() {
		mt.mu.Lock()
		defer mt.mu.Unlock()
		mt.reclaimTimer = nil
		if mt.wiped {
			return
		}
		if mt.reclaimLocked() > 0 {
			mt.reclaimTries++
		} else {
			mt.reclaimTries = 0
		}
		mt.scheduleReclaim()
	})
}

// reclaim overwrites and deletes every retired file no handle holds, and
// returns how many are left.
func (mt *Mount) reclaim() int {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	return mt.reclaimLocked()
}

func (mt *Mount) reclaimLocked() int {
	if len(mt.retired) == 0 {
		return 0
	}
	live, ok := mt.liveIDs()
	if !ok {
		// Without every live file's identity, an old name could be
		// the container's file: nothing is overwritten this time.
		return len(mt.retired)
	}
	var left []string
	for _, name := range mt.retired {
		path := filepath.Join(mt.dir, name)
		id, err := fileID(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			left = append(left, name)
			continue
		case live[id]:
			// A second name of a file the container still holds (a swap
			// that failed): only the name goes, never the bytes.
			if removeEntry(path) != nil {
				left = append(left, name)
			}
			continue
		}
		// Opened with no sharing: refused while anyone holds the file,
		// and nobody can open it while the zeros go in.
		if err := wipeFile(path); err != nil {
			left = append(left, name)
		}
	}
	mt.retired = left
	return len(left)
}

// winFileID identifies a file on a volume, whatever its names.
type winFileID struct{ vol, hi, lo uint32 }

// fileID returns the identity of the file at path, through a handle that
// asks only for its attributes and so neither waits for nor hinders any
// reader.
func fileID(path string) (winFileID, error) {
	h, err := openEntry(path, winapi.FILE_READ_ATTRIBUTES|winapi.SYNCHRONIZE, winapi.FILE_SHARE_READ|winapi.FILE_SHARE_WRITE|winapi.FILE_SHARE_DELETE)
	if err != nil {
		return winFileID{}, err
	}
	defer winapi.CloseHandle(h)
	var fi winapi.ByHandleFileInformation
	if err := winapi.GetFileInformationByHandle(h, &fi); err != nil {
		return winFileID{}, err
	}
	return winFileID{vol: fi.VolumeSerialNumber, hi: fi.FileIndexHigh, lo: fi.FileIndexLow}, nil
}

// liveIDs are the identities of the files the container holds now; ok is
// false when one could not be read (other than a file that is gone).
func (mt *Mount) liveIDs() (ids map[winFileID]bool, ok bool) {
	ids = make(map[winFileID]bool, len(mt.files))
	for _, f := range mt.files {
		id, err := fileID(filepath.Join(mt.Source(), f.Name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, false
		default:
			ids[id] = true
		}
	}
	return ids, true
}
