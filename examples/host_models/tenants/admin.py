from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from .models import Organization, Person, Seat

admin.site.register(Person, UserAdmin)
admin.site.register(Organization)
admin.site.register(Seat)
