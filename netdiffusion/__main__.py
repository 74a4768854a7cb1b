from netdiffusion.cli import main

raise SystemExit(main())
