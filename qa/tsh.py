"""Print validate's tshark counts for pcap files: python qa/tsh.py FILE..."""
import sys
from pathlib import Path

from netdiffusion.validate import tshark_file

for f in sys.argv[1:]:
    r = tshark_file(Path(f))
    print(f, {k: r[k] for k in ("packets", "malformed", "bad_checksums", "expert_errors", "tcp_errors")},
          dict(r["tcp_flags"]), dict(r["expert_error_messages"]), r.get("error", ""))
