from roomcast.cli import main

raise SystemExit(main())
