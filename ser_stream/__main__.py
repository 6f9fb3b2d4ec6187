from ser_stream.cli import main

raise SystemExit(main())
