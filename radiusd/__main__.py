from radiusd.cli import main

raise SystemExit(main())
