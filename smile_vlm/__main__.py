from smile_vlm.cli import main

raise SystemExit(main())
