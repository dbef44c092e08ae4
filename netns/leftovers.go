package netns

import (
	"bytes"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// killLeftovers ends what the command left behind once it has exited: its
// process group, and every process reparented to osandbox (the subreaper),
// even one that left the group with setsid. The sandbox is over when the
// command is: nothing of it outlives the run.
func killLeftovers(pgid int) {
	_ = unix.Kill(-pgid, unix.SIGKILL)
	self := os.Getpid()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		kids := children(self)
		if len(kids) == 0 {
			return
		}
		for _, pid := range kids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		for {
			pid, err := unix.Wait4(-1, nil, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// children lists the processes whose parent is ppid, from /proc.
func children(ppid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The fields after the command name, which is in parentheses and may
		// hold anything: state, then ppid.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(stat[i+1:])
		if len(f) > 1 {
			if p, _ := strconv.Atoi(string(f[1])); p == ppid {
				out = append(out, pid)
			}
		}
	}
	return out
}
