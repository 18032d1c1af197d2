from order_cancel.cli import main

raise SystemExit(main())
